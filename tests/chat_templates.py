"""Chat templates of thinking models, cut to what matters here: how they end a prompt."""

# Qwen3 (hybrid): thinks unless enable_thinking is false, which closes an empty block.
QWEN3_HYBRID = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
# Qwen3 Thinking-2507: opens <think> in every prompt; the reply only closes it.
QWEN3_THINKING_2507 = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
