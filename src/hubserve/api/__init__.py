"""Front doors: each wire protocol translates to one internal request and back, and nothing more."""
