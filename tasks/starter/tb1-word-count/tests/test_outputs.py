import collections
import re
import unittest
from pathlib import Path


def expected() -> list[str]:
    words = re.findall(r"[a-z]+", Path("/app/notes.txt").read_text().lower())
    counts = sorted(collections.Counter(words).items(), key=lambda kv: (-kv[1], kv[0]))
    return [f"{w} {c}" for w, c in counts[:10]]


class TopWords(unittest.TestCase):
    def test_file_exists(self):
        self.assertTrue(Path("/app/top_words.txt").is_file())

    def test_top_ten(self):
        self.assertEqual(Path("/app/top_words.txt").read_text().split("\n")[:10], expected())


if __name__ == "__main__":
    unittest.main()
