// The HTTP/1.1 request parser (request line, headers, Content-Length, pipelining, limits) and the
// error responses it sends, through HttpServer::process_for_fuzzing with a handler that answers.
#include "fuzz_util.h"
#include "server/http_server.h"

using namespace llamarun::server;

// tests/test_fuzz_inputs.cpp includes this file with LLAMARUN_FUZZ_ENTRY renamed, to run the seeds
// and regression inputs in the ordinary test build.
#ifndef LLAMARUN_FUZZ_ENTRY
#define LLAMARUN_FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

extern "C" int LLAMARUN_FUZZ_ENTRY(const uint8_t* data, size_t size) {
  static HttpServer* server = [] {
    HttpServerOptions o;
    o.max_body_bytes = 4096;
    o.max_header_bytes = 2048;
    return new HttpServer(o, [](HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
      HttpResponse r;
      r.body = req.method + " " + req.path + " " + std::to_string(req.headers.size()) + " " +
               std::to_string(req.body.size());
      if (req.path == "/stream") {
        ex->start_stream(200, "text/event-stream");
        ex->write(req.body);
        ex->end();
      } else {
        ex->respond(std::move(r));
      }
    });
  }();
  server->process_for_fuzzing(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
