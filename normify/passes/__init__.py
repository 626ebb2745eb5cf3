"""Graph passes: each takes a Graph and returns a new Graph and the edits it made."""
