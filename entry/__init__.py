"""The entry layer: the `bot` command line and the code that assembles a running bot."""
