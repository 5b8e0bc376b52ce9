"""hafvt: IFCDSR and HAF-VT reproduction."""
__version__ = "0.1.0"
