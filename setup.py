"""The compiled ingest scanner (ingest/_scan.pyx); the rest of the project is in pyproject.toml.

Without a C compiler or Cython the build goes on without it, and ingest uses the Python
decoder it falls back to (``ingest._fastjson``): slower, with the same results.
"""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # built without the build requirements of pyproject.toml
    extensions = []
else:
    extensions = cythonize(
        [Extension("ingest._scan", ["ingest/_scan.pyx"])],
        compiler_directives={"language_level": 3},
        quiet=True,
    )
    for extension in extensions:
        extension.optional = True  # cythonize does not carry it over

setup(ext_modules=extensions)
