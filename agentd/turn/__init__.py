"""One turn, from a user's message to a stored answer: the chat service, the tool loop, the recorder."""
