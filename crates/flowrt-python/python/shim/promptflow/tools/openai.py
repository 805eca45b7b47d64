"""promptflow.tools.openai: `chat` and `completion` against an OpenAI connection."""

from promptflow.tools._llm import call


def chat(connection, prompt, model="gpt-3.5-turbo", temperature=1.0, top_p=1.0, n=1, stream=False,
         stop=None, max_tokens=None, presence_penalty=0, frequency_penalty=0, logit_bias=None, user="",
         function_call=None, functions=None, response_format=None, **kwargs):
    if stream:
        raise NotImplementedError("promptflow.tools.openai.chat(stream=True) is not supported by flowrt; use an llm node")
    params = dict(model=model, temperature=temperature, top_p=top_p, n=n, stop=stop, max_tokens=max_tokens,
                  presence_penalty=presence_penalty, frequency_penalty=frequency_penalty, logit_bias=logit_bias,
                  user=user, function_call=function_call, functions=functions, response_format=response_format)
    return call("chat", connection, prompt, params, kwargs)


def completion(connection, prompt, model="gpt-3.5-turbo-instruct", suffix=None, max_tokens=16, temperature=1.0,
               top_p=1.0, n=1, stream=False, logprobs=None, echo=False, stop=None, presence_penalty=0,
               frequency_penalty=0, best_of=1, logit_bias=None, user="", **kwargs):
    if stream:
        raise NotImplementedError("promptflow.tools.openai.completion(stream=True) is not supported by flowrt; use an llm node")
    params = dict(model=model, suffix=suffix, max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n,
                  logprobs=logprobs, echo=echo, stop=stop, presence_penalty=presence_penalty,
                  frequency_penalty=frequency_penalty, best_of=best_of, logit_bias=logit_bias, user=user)
    return call("completion", connection, prompt, params, kwargs)
