"""An agent's side of codemode: run code in a session with the Python client.

python examples/agent.py --session agent-1 --namespace default
python examples/agent.py --url http://127.0.0.1:8080 --token "$TOKEN"
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from codemode_session.client import SessionClient

CODE = """
text = "the quick brown fox jumps over the lazy dog the end"
top = workflows.top_words(text=text, n=2)
workflows.word_count(text=text, save_as="demo/word-counts")
print("top words:", top)
artifacts.load("demo/word-counts")["words"]
"""


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[SessionClient]:
    if args.url:
        with SessionClient(args.url, token=args.token) as client:
            yield client
        return
    from codemode_operator.sessions import Sessions

    sessions = Sessions(namespace=args.namespace)
    try:
        with sessions.connect(args.session, args.workspace) as client:
            yield client
    finally:
        sessions.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a session server URL (skips Kubernetes)")
    parser.add_argument("--token", help="its bearer token")
    parser.add_argument("--session", default="agent-1")
    parser.add_argument("--workspace", default="client-a")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()
    with connect(args) as client:
        print("workflows:", [w["name"] for w in client.list_workflows()])
        result = client.execute(CODE)
        print(result.stdout, end="")
        if result.error:
            raise SystemExit(result.error)
        print("words counted:", result.value)


if __name__ == "__main__":
    main()
