"""Change feeds: ordered, resumable streams of row changes from the hospital's database."""

from livedash.changefeed.base import Change, ChangeSource, Op, open_change_source

__all__ = ["Change", "ChangeSource", "Op", "open_change_source"]
