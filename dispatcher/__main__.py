import sys

from dispatcher.cli.main import main

sys.exit(main(["serve", *sys.argv[1:]]))
