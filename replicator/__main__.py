import sys

from replicator.worker import main

sys.exit(main())
