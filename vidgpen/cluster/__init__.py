"""Many videos, many machines: split long files into segments and join them again, and (with ``--cluster``)
run folders and segments on a Ray cluster.

- :mod:`vidgpen.cluster.plan`: where a file may be cut (keyframes from a packet scan) and how many warm-up
  frames each piece needs around it; files whose timing cannot be trusted stay one unit.
- :mod:`vidgpen.cluster.segment`: restore one piece through the ordinary pipeline, keep a journal of finished
  pieces, run a whole segmented file on one machine.
- :mod:`vidgpen.cluster.join`: packet-copy the pieces into one video stream with the source's other streams.
- :mod:`vidgpen.cluster.ray_runner`: the Ray side (imported only with ``--cluster``).

Nothing in this package but ``ray_runner`` imports Ray.
"""
