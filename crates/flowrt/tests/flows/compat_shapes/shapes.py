def shout(text: str = "hello"):
    return text.upper() + "!"
