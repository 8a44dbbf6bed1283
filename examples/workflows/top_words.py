"""The most frequent words of a text, built on the word_count workflow."""


async def run(text: str, n: int = 3) -> list:
    """Top words.

    Args:
        text: the text to analyse
        n: how many words to return
    """
    counts = workflows.word_count(text=text)["counts"]  # noqa: F821
    return sorted(counts, key=lambda w: (-counts[w], w))[:n]
