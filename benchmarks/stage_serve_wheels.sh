#!/usr/bin/env bash
# The wheels the server (python -m rag.serve) and its load benchmarks need on the GPU machine, whose
# image lacks them (no network there): FastAPI, uvicorn, the openai client, faiss-cpu, langchain-core
# and their dependencies, pinned as in this project's .venv, for the image's Python 3.12. Run here,
# from the project root; they go to the ignored .gpu/serve_whl (about 34 MB: one call carries them).
# On the device, after call 1 of ../shared/gpu/README.md (the model's first half):
#   call 2: carry [".gpu/serve_whl"]  command: mkdir -p /tmp/llma/whl && cp .gpu/serve_whl/*.whl /tmp/llma/whl/
#   call 3: carry [".gpu/part2", ".gpu/data"]  command: cp .gpu/part2/* /tmp/llma/ && source /tmp/llma/assemble.sh && ...
# (assemble.sh installs every wheel in /tmp/llma/whl into /tmp/site, ahead of the image's packages.)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
rm -rf .gpu/serve_whl && mkdir -p .gpu/serve_whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .gpu/serve_whl \
  fastapi==0.165.0 starlette==1.10.0 annotated-doc==0.0.7 uvicorn==0.55.0 h11==0.16.0 click==8.5.1 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0 anyio==4.16.0 sniffio==1.3.1 prometheus-client==0.26.0 \
  openai==3.51.0 httpx==0.29.0 httpcore==1.0.9 httpx2==2.17.0 httpcore2==2.17.0 distro==1.9.0 \
  jiter==0.19.0 certifi==2026.10.19.post1 idna==3.21 \
  faiss-cpu==1.15.1 langchain-core==1.7.2 langchain-text-splitters==1.1.3 langchain-protocol==0.0.20 \
  langsmith==0.15.1 jsonpatch==1.48 jsonpointer==3.12 tenacity==9.2.1 orjson==3.13.0 uuid-utils==0.19.0 \
  zstandard==0.25.0 xxhash==4.1.0 requests-toolbelt==1.0.0 pypdf==7.1.0 beautifulsoup4==4.15.0 soupsieve==4.1.4 \
  truststore==0.10.5 opentelemetry-api==1.45.2
du -sh .gpu/serve_whl
