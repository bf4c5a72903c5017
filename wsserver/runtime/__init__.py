"""The gevent world of one worker process: listeners, acceptor, dispatcher, sessions."""
