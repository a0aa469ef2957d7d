"""The `envcat` command line (the client); the commands live in `envcat.cli.main`."""
