"""The one thing pyproject.toml cannot say without an experimental table: the parser's byte scans in C
(src/mailconnector/mime/_scans.py says why). Optional: without a C compiler the install goes on, and the
parser uses their Python twins, which give the same results more slowly."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mailconnector.mime._scans_c", ["src/mailconnector/mime/_scans_c.c"], optional=True)])
