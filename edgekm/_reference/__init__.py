"""Pure-NumPy reference twin of ``edgekm._core``.

It follows the same arithmetic and draw order as the Cython backend (see
``docs/internals.md``) and serves as the test oracle and as the fallback when
the compiled extension is missing.
"""
