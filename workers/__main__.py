import sys

# `logdispatch work` by the same way in: it knows every command, to check a --config file.
from dispatcher.cli import main

sys.exit(main(["work", *sys.argv[1:]]))
