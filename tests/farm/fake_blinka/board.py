"""A stand-in for blinka's `board` on an exporter host of the farm test (tests/farm/_lab.py):
the FT232H pin names the bench instruments use."""

C0, C1, C2, C3, C4, SCL, SDA = "C0", "C1", "C2", "C3", "C4", "SCL", "SDA"
