"""Pure core of the pump firmware: imports nothing from machine."""
VERSION = "0.1.0"
