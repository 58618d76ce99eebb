"""pumprig HIL: a pytest plugin that runs the suites in hil/ against virtual or bench rigs."""
