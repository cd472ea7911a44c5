"""The test suite runs generated suites through pytest's own ``pytester``."""

pytest_plugins = ["pytester"]
