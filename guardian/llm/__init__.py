"""The LLM side of the investigator: config, the LangGraph agent, and the local model server."""
