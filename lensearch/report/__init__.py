"""``lensearch report``: a self-contained HTML/Markdown report of one or more searches (figures, physics, findings)."""
