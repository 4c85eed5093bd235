// medgrid all-in-one: every service in one process over a local PostgreSQL.
// Flags, start-up, and a graceful stop on SIGTERM/SIGINT; the logic lives in
// libs/app.
#include <csignal>
#include <iostream>

#include "medgrid/app/app.h"
#include "medgrid/core/logging.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << medgrid::app::FlagsHelp();
    return 0;
  }
  auto config = medgrid::app::ParseFlags(args);
  if (!config.ok()) {
    std::cerr << "medgrid: " << config.status().message() << "\n";
    return 2;
  }
  medgrid::core::InitLogging(config->log_level);

  // Block the stop signals before any thread starts so only sigwait sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto app = medgrid::app::App::Start(*config);
  if (!app.ok()) {
    medgrid::core::Log(medgrid::core::LogLevel::kError, "server.start_failed",
                       {{"reason", std::string(app.status().message())}});
    medgrid::core::FlushLogs();
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  medgrid::core::Log(medgrid::core::LogLevel::kInfo, "server.stopping", {{"signal", std::to_string(sig)}});
  (*app)->Stop();
  medgrid::core::FlushLogs();
  return 0;
}
