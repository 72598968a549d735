import sys

# The worker's own program, as `logdispatch work`. It knows only its own command, so it
# ignores the keys of a configuration file that are other commands'; `logdispatch work` can
# tell those from typos.
from workers.cli import main

sys.exit(main(sys.argv[1:]))
