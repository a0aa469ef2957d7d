"""EnvCat: secrets released to a terminal only after a person approves them."""

__version__ = "0.1.0"
