import os
import signal
import sys

# ``python -m explain`` puts the working directory first on sys.path: a shared folder's cv2.py
# or torch/ would be imported in place of the installed ones. Nothing is imported from it (a
# trusted config's own module is looked for there last: explain.models.factories.own_modules).
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from explain.cli import main  # noqa: E402

code = 130  # main answers a Ctrl-C itself; one in the instant after it returned lands below
try:
    code = main()
    # the work is done: a Ctrl-C while the interpreter joins its threads would only print a
    # traceback over the run's last lines
    signal.signal(signal.SIGINT, signal.SIG_IGN)
except KeyboardInterrupt:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(code)
