import sys

from realtalk_bridge.cli import main

sys.exit(main())
