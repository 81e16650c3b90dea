import signal
import sys

from explain.cli import main  # the working directory is off sys.path (explain/__init__.py)

code = 130  # main answers a Ctrl-C itself; one in the instant after it returned lands below
try:
    code = main()
    # the work is done: a Ctrl-C while the interpreter joins its threads would only print a
    # traceback over the run's last lines
    signal.signal(signal.SIGINT, signal.SIG_IGN)
except KeyboardInterrupt:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(code)
