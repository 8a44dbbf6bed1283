"""A search-quality set: workflows, and for each a query in other words.

Each query shares no content word with its workflow's name or description
(`shared_words` checks it), so only meaning can find it. Used by
tests/integration/test_semantic_search.py and bench/search.py.
"""

from __future__ import annotations

import re

# name, description, a paraphrased query
CASES: list[tuple[str, str, str]] = [
    (
        "sentiment",
        "Classify the sentiment of a text as positive, negative or neutral.",
        "happiness opinion",
    ),
    ("top_words", "The most frequent words of a text.", "which terms keep coming up"),
    ("translate_text", "Translate text into another language.", "render this sentence in french"),
    ("summarize", "Summarize a long document into a few sentences.", "make an article shorter"),
    ("send_email", "Send an email message to a recipient.", "mail someone a note"),
    ("resize_image", "Resize an image to the given width and height.", "scale a picture down"),
    ("fetch_weather", "Get the weather forecast for a city.", "will it rain tomorrow"),
    (
        "convert_currency",
        "Convert an amount between currencies using exchange rates.",
        "dollars to euros",
    ),
    ("parse_csv", "Parse a CSV file into rows.", "read a spreadsheet export"),
    ("word_count", "Count the words in a text.", "how long is this essay"),
    ("detect_language", "Detect which language a text is written in.", "is this french or german"),
    ("extract_emails", "Extract email addresses from a text.", "find contact mail handles"),
    ("spell_check", "Find spelling mistakes in a text.", "typos in my essay"),
    ("compress_file", "Compress a file with gzip.", "make an archive smaller"),
    ("hash_password", "Hash a password securely with a salt.", "store login secrets safely"),
    ("generate_uuid", "Generate a random unique identifier.", "new guid"),
    ("schedule_meeting", "Schedule a meeting in the calendar.", "book an appointment"),
    ("stock_price", "Look up the current price of a stock ticker.", "share value of a company"),
    (
        "geocode_address",
        "Turn a street address into latitude and longitude.",
        "coordinates of a place",
    ),
    (
        "ocr_scan",
        "Recognize printed characters in a scanned page image.",
        "read words from a photo",
    ),
    (
        "transcribe_audio",
        "Transcribe speech in an audio recording to text.",
        "turn a voice memo into writing",
    ),
    ("dedupe_records", "Remove duplicate records from a list.", "drop repeated entries"),
    ("sort_by_date", "Sort items by their date, newest first.", "order chronologically"),
    ("calculate_tax", "Calculate sales tax for an amount.", "how much VAT do I owe"),
    ("validate_json", "Check that a document is valid JSON.", "is this payload well formed"),
    ("diff_files", "Show the differences between two files.", "what changed from the old version"),
    ("backup_database", "Back up a database to a dump file.", "save a copy of postgres"),
    ("monitor_uptime", "Check whether a website is up.", "is the site down"),
    ("shorten_url", "Shorten a long URL into a short link.", "tiny web address for sharing"),
    ("random_password", "Generate a strong random password.", "create a secure passphrase"),
    (
        "timezone_convert",
        "Convert a time from one time zone to another.",
        "what hour is it in tokyo",
    ),
    ("classify_spam", "Decide whether a message is spam.", "junk mail filter"),
    ("keyword_extract", "Extract the key phrases of a document.", "main topics of an article"),
    ("plot_chart", "Draw a line chart of a series of numbers.", "visualize data as a graph"),
    ("pdf_to_text", "Extract the text of a PDF document.", "read words from an acrobat file"),
    ("moving_average", "Compute the moving average of a time series.", "smooth a noisy signal"),
    ("detect_faces", "Find faces in a photo.", "locate people in a picture"),
    ("invoice_total", "Add up the line items of an invoice.", "sum of a bill"),
    (
        "normalize_phone",
        "Normalize phone numbers to international format.",
        "clean up telephone contacts",
    ),
    ("split_sentences", "Split a text into sentences.", "break a paragraph at each full stop"),
    (
        "recommend_movies",
        "Recommend films similar to one a user liked.",
        "what should I watch next",
    ),
    (
        "age_from_birthdate",
        "Compute a person's age from their date of birth.",
        "how old is someone born in 1990",
    ),
    ("bmi_calculator", "Compute body mass index from weight and height.", "am I overweight"),
    (
        "currency_format",
        "Format a number as money with a currency symbol.",
        "show 1234.5 as $1,234.50",
    ),
    ("roman_numerals", "Convert numbers to Roman numerals.", "write 2024 as MMXXIV"),
    ("palindrome_check", "Check whether a word reads the same backwards.", "is racecar symmetric"),
    ("prime_factors", "Factor an integer into primes.", "decompose 360 into divisors"),
    (
        "fibonacci",
        "The first n Fibonacci numbers.",
        "sequence where each term adds the previous two",
    ),
    (
        "celsius_to_fahrenheit",
        "Convert a temperature from Celsius to Fahrenheit.",
        "how hot is 30 degrees in american units",
    ),
    (
        "git_changelog",
        "Write release notes from git commit messages.",
        "what went into this version",
    ),
    ("slugify", "Turn a title into a URL-friendly slug.", "make a web path from a headline"),
    ("qr_code", "Generate a QR code image for a link.", "scannable square barcode"),
]

_STOPWORDS = """a an and are as at be by can do does for from how i in into is it me my of on
one or so some than that the this to was what when where which who why will with you your"""
STOPWORDS = frozenset(_STOPWORDS.split())


def words(text: str) -> set[str]:
    return {w for w in re.split(r"[\W_]+", text.lower()) if w and w not in STOPWORDS}


def shared_words(name: str, description: str, query: str) -> set[str]:
    return words(query) & (words(name) | words(description))


def workflow_source(name: str, description: str) -> str:
    return f'"""{description}"""\n\n\nasync def run(text: str = "") -> str:\n    return text\n'
