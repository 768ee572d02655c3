#!/usr/bin/env python3
"""Fails when a page of the built book (target/book) links to a page or an anchor that is
not there. External links (http, https, mailto) are not followed: the machines that run the
tests may have no internet.

Usage: check-book.py BOOK_DIR
"""

import os
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

# Pages mdBook writes besides the chapters, and the print page that repeats them all.
SKIPPED = {"404.html", "print.html", "toc.html"}


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for name in ("href", "src"):
            if attrs.get(name):
                self.links.append(attrs[name])


def main(book):
    pages = {}
    for root, _, files in os.walk(book):
        for name in files:
            if name.endswith(".html"):
                path = os.path.relpath(os.path.join(root, name), book)
                page = Page()
                with open(os.path.join(root, name), encoding="utf-8") as f:
                    page.feed(f.read())
                pages[path] = page
    broken = []
    for path, page in sorted(pages.items()):
        if path in SKIPPED:
            continue
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue
            target = (
                os.path.normpath(os.path.join(os.path.dirname(path), unquote(parts.path)))
                if parts.path
                else path
            )
            if parts.path and not os.path.exists(os.path.join(book, target)):
                broken.append(f"{path}: {link} (no such file)")
            elif parts.fragment and target in pages and parts.fragment not in pages[target].ids:
                broken.append(f"{path}: {link} (no such anchor)")
    for line in broken:
        print(line)
    print(f"{len(pages)} pages checked, {len(broken)} broken links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "target/book"))
