"""omama: fast O-MaMa object mask matching between egocentric and exocentric views."""

__version__ = "0.1.0"
