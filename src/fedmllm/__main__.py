"""``python -m fedmllm``: the ``fedmllm`` command."""

import sys

from .cli import main

sys.exit(main())
