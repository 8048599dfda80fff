"""A report document as a PDF to take to a meeting, laid out with reportlab's platypus.

Every page carries the hospital, the report's title, its period in local time with the time
zone, who it was generated for and when, and "page X of Y" (`pages`). The body holds the
headline figures, the notes, each chart (`charts`) and each table in full (`tables`): a long
table runs on over as many pages as it needs and repeats its header row on each. `look` holds
the fonts, colours and the way each kind of cell is shown. Rendering is pure and blocking;
callers run it in a worker thread.
"""

from livedash.reports.pdf.pages import render_pdf

__all__ = ["render_pdf"]
