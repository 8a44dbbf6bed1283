"""Count the words of a text and keep the result as an artifact."""


async def run(text: str, save_as: str = "") -> dict:
    """Count words.

    Args:
        text: the text to count
        save_as: artifact name to save the counts under (optional)
    """
    counts: dict[str, int] = {}
    for word in text.lower().split():
        word = word.strip(".,;:!?\"'()")
        if word:
            counts[word] = counts.get(word, 0) + 1
    result = {"words": sum(counts.values()), "distinct": len(counts), "counts": counts}
    if save_as:
        artifacts.save(save_as, result, description="word counts")  # noqa: F821
    return result
