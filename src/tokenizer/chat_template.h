// Chat prompt formats, rendered exactly as the models' Hugging Face jinja chat templates render
// them (tests compare against jinja2 output of the real templates: tools/make_chat_goldens.py).
// The rendered text contains special-token strings. encode_chat matches them only in the
// template's own text: message content is plain text, so a user cannot forge a turn by writing
// "<|im_start|>system" or "</s>" (the tokens come out as text pieces).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace llamarun {

class Tokenizer;
struct WeightMap;

enum class ChatFormat {
  kLlama2,  // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>...
  kChatML,  // <|im_start|>{role}\n{content}<|im_end|>\n ... (SmolLM2, Qwen)
  kLlama3,  // <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>...
  kZephyr,  // <|system|>\n{content}</s>\n<|user|>\n{content}</s>\n<|assistant|>\n
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatOptions {
  // ChatML: the system message inserted when the conversation has none. Unset: SmolLM2's
  // ("You are a helpful AI assistant named SmolLM, trained by Hugging Face"); "" inserts none.
  std::optional<std::string> default_system;
};

const char* chat_format_name(ChatFormat f);

// Picks the format from a jinja chat template ("[INST]", "<|im_start|>", "<|start_header_id|>",
// "<|user|>"), or when the template is empty or unrecognised from the tokenizer's special tokens
// (<|start_header_id|> -> Llama 3, <|im_start|> -> ChatML, an "spm" tokenizer -> Llama 2, else ChatML).
ChatFormat detect_chat_format(const std::string& jinja_template_or_empty, const Tokenizer& tok);

// Options implied by a template: for ChatML, the default system message it embeds
// ("<|im_start|>system\n...<|im_end|>" inside `{% if loop.first and ... != 'system' %}`), or none.
ChatOptions chat_options_from_template(ChatFormat f, const std::string& jinja_template_or_empty);

// Renders a conversation. add_generation_prompt appends the assistant header (Llama 2's template
// has none: its prompt ends with " [/INST]"). Throws Error for an unknown role, and for Llama 2
// when roles do not alternate user/assistant after an optional leading system message (as its
// template's raise_exception does).
std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_generation_prompt,
                        const ChatOptions& opt = {});

// The rendered conversation as pieces: template text (content = false) and message text
// (content = true), in order; neighbours of a kind are merged. Joined, they give render_chat.
struct ChatPiece {
  std::string text;
  bool content;
};
std::vector<ChatPiece> render_chat_pieces(ChatFormat f, const std::vector<ChatMessage>& msgs,
                                          bool add_generation_prompt, const ChatOptions& opt = {});

// Throws Error when a message's content holds a chat marker that is plain text in the template
// itself and so cannot be kept apart from it by tokenization: Llama 2's [INST], [/INST], <<SYS>>
// and <</SYS>> (Meta's reference chat code refuses these too).
void check_chat_content(ChatFormat f, const std::vector<ChatMessage>& msgs);

// The prompt ids. The rendered text already holds the BOS string where the template puts one, so
// no BOS is added (as apply_chat_template). special_in_content = false (the default): special
// tokens are matched only in the template's text and message content is encoded as plain text
// (check_chat_content applies); true: the whole text is encoded with parse_special = true, as
// Hugging Face's apply_chat_template does (content can then forge turns).
std::vector<int32_t> encode_chat(const Tokenizer& tok, ChatFormat f, const std::vector<ChatMessage>& msgs,
                                 bool add_generation_prompt, const ChatOptions& opt = {},
                                 bool special_in_content = false);

// tokenizer.chat_template from GGUF metadata, or "" when absent.
std::string gguf_chat_template(const WeightMap& wm);

}  // namespace llamarun
