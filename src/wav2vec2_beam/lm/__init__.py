"""Builds the n-gram language models (ARPA files) that CTC beam search loads through KenLM."""
