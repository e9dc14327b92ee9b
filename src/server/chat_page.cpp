#include "server/chat_page.h"

#include "chat_page_html.h"  // generated: kChatPageHtml

namespace llamarun::server {

bool is_chat_page_path(const std::string& path) { return path == "/" || path == "/index.html"; }

HttpResponse chat_page_response() {
  HttpResponse r;
  r.status = 200;
  r.content_type = "text/html; charset=utf-8";
  r.headers.push_back({"Cache-Control", "no-cache"});
  r.headers.push_back({"X-Content-Type-Options", "nosniff"});
  // The page loads nothing from elsewhere: forbid it outright.
  r.headers.push_back({"Content-Security-Policy",
                       "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                       "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"});
  r.body.assign(kChatPageHtml, sizeof(kChatPageHtml) - 1);
  return r;
}

}  // namespace llamarun::server
