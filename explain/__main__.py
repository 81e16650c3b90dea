import signal
import sys

from explain.cli import main  # the working directory is off sys.path (explain/__init__.py)


def _done() -> None:
    """The work is done: a Ctrl-C while the interpreter joins its threads would only print a
    traceback over the run's last lines, and a SIGTERM ends the process as it always did."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


code = 130  # main answers a Ctrl-C itself; one in the instant after it returned lands below
try:
    code = main()
    _done()
except KeyboardInterrupt:
    _done()
sys.exit(code)
