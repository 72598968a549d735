import sys

from dispatcher.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
