import sys

from codemode_session.cli.main import main

sys.exit(main())
