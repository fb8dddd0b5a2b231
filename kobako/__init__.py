"""kobako (小箱, "small box"): a container engine built from Linux primitives."""

__version__ = "0.1.0"
