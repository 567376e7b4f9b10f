"""What several test modules share: the import graph's rules, the lab's guest helpers."""
