"""Strings that come from a gallery, a card, a URL or a visitor, shown as text and never as markup.

A model id, concept name, dataset name, objective or card field is data written by whoever made the gallery (or
typed the link): put as is into Markdown or HTML, `<img src=...>`, `![x](http://...)` or a bare URL in it would
make the reader's browser fetch that address, or plant a link. `inert` is the one escape for all of them: the app
uses it wherever it shows such a string in Markdown or in an error message, and the gallery card uses it for the
Hub's page.
"""

from __future__ import annotations

import re
from typing import Any

# What starts markup in Markdown (CommonMark and GFM: HTML tags, entities, links and images, code spans,
# emphasis, strikethrough, table cells, headings, math) becomes a numeric character reference: Markdown and HTML
# both show it as the character itself and parse it as nothing. `_` stays (ids are full of it; within words it is
# no emphasis, and emphasis fetches nothing).
MARKDOWN_SYNTAX = str.maketrans({c: f"&#{ord(c)};" for c in "&<>[]`\\*~|#$"})
HTML_SYNTAX = str.maketrans({c: f"&#{ord(c)};" for c in "&<>"})
# GFM also links bare URLs (http://, https://, ftp://, www.) and e-mail addresses, with no syntax at all
AUTOLINK = re.compile(r"(?<=[a-z]):(?=//)|(?<=www)\.|@", re.IGNORECASE)


def inert(value: Any, *, markdown: bool = True) -> str:
    """`value` as plain text inside Markdown (the default) or inside HTML (`markdown=False`: error messages,
    which the app's toasts show as HTML). Ordinary ids and names come back unchanged."""
    if not markdown:
        return str(value).translate(HTML_SYNTAX)
    text = " ".join(str(value).split())  # a line break would start a Markdown block (heading, list, table)
    return AUTOLINK.sub(lambda found: f"&#{ord(found[0])};", text.translate(MARKDOWN_SYNTAX))
