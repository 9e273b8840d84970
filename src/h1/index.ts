export { H1Agent, H1Error, tcpConnector, directReadSocket, type H1ConnectTarget, type H1Connector, type H1Controller, type H1Handler, type H1Options, type H1Request } from './client.ts';
export { H1ParseError, ResponseParser, statusOf, type ParserEvents, type ResponseHead } from './parser.ts';
