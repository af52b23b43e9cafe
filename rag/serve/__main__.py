import sys

from rag.serve.cli import main

sys.exit(main())
