"""``python -m sta_deploy.runtime._trt_parse_child REQUEST``: trt_parse's child process (see that module)."""

import sys

from .trt_parse import _child_main

if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
