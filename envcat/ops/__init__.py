"""Operating an EnvCat server: the `envcat server …` commands and the `up` supervisor."""
